"""Archives: cold models copied out of the cache, content-addressed, and brought back as their library lays them out."""
