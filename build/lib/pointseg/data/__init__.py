"""Data: sources that read windows of samples, class tables, bands, clicks and labels, the cache, datasets."""
