"""What people hear and see: audio, piano rolls and training curves."""
