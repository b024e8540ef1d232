"""Records (SQLite), artifact stores (local folder, private Hub repos), files and outbound HTTP."""
