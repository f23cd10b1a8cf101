"""The shipped presets: the YAML files in this folder (format: presets/README.md).

There is no code here. The folder is a package only so that an installed copy carries the YAML files
as package data, next to `core`; `core.presets` finds them as `<core's folder>/../presets`.
"""
