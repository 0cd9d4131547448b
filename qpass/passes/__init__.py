"""Passes: each a function over (PassContext, options), listed with its options type in `registry`."""
