"""Alert history: the alerts topic in SQL (``pipeline history``), read by the console."""
