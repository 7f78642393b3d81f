"""From MIDI files to a prepared dataset, and from its states to the model's input rows and batches."""
