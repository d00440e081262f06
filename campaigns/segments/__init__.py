"""The segment rule language.

rules.py validates a JSON rule tree into a typed tree, query.py parses the human query string
into the same JSON, compile.py turns a typed tree into one Django Q. campaigns.selectors is the
entry point for everything else (segment_queryset, segment_count, segment_where, ...).
"""
