"""autoshrink.env: the Gymnasium side of the search."""
