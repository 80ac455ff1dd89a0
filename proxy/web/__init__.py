"""The live web view (``h2proxy --web``, ``h2proxy log web``): a bounded model of what the proxy saw,
built from frame-log records, and the pages and JSON routes that show it."""
