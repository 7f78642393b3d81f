"""Music as data: MIDI in and out, piano states, keys, repeats. No torch here."""
