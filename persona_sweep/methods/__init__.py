"""Marker-training methods: each turns a trial's knobs into training examples."""
