"""Tools around the ChopinBot library, not part of it: speed benchmarks (`make bench`),
the MIDI fuzzer (`make fuzz`) and the Piano-midi.de benchmark with its frame models."""
