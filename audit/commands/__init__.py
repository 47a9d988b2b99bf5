"""Commands of the command line that have a module of their own: each gives `add_parser` and
`run`, and `audit.cli` registers it."""
