# WARNING: this file is generated from tests/cluster/_async/__init__.py by tools/gen_sync.py.
# Do not edit it: edit the source and run `python tools/gen_sync.py`.


