"""Leaf helpers every other part may import: atomic file and folder writes (`atomic`) and what this process has to work
with (`host`: usable cores, the thread policy, moving a batch to a device). Imports the standard library and torch
only, never another lmcore module.
"""
