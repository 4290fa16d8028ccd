"""The shared engine: optimiser and schedule, checkpoint I/O and export, run directories, the doctor."""
