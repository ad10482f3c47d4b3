"""The click layer of fishcast, installed as ``fishcast.cli``.

It parses options, calls the library and prints. No physics lives here.
"""
