"""Data: batch contracts, one reader per on-disk format, transforms, samplers, DataModules."""
