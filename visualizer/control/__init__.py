"""Playing the live app from the rig: bindings, the mapping file, the dispatcher, OSC in and out.

No Qt here: the session, the tests and the window all use the same objects. Every source (the OSC
thread, the MIDI thread, keys, the UI) calls the `ControlDispatcher`, which checks each value against
the `core.params` registry and hands the effect to the session (parameter snapshots and events posted
to the render worker's mailboxes; nothing waits on a frame).

Modules:
- `bindings`: `ControlSource` (cc, note, osc, key), `ControlTarget` (param, preset, fade,
  next_preset, previous_preset, tap, record, freeze), `Binding` (min, max, invert, curve; `value_for(x)`).
- `mapping_file`: `load_mapping(path)`, `save_mapping(path, bindings)`, `default_mapping_path()`;
  versioned YAML read like a preset (size limit, no aliases, one-line errors), written atomically.
- `dispatcher`: `ControlDispatcher(surface, mapping_path)`:
  sources `midi(event)` (a `midi.MidiEvent`), `osc_bound(address, args)`, `key(name)`;
  targets `set_param(name, value, source)`, `set_fade(seconds)`, `pick_preset(number or name)`,
  `step_preset(+1/-1)`, `set_modulation(param, mod_source, depth)`, `perform(target, value)`,
  `target_for(action)`;
  learn `learn(target)`, `cancel_learn()`, `learning`, `on_learned`;
  bindings `bindings`, `bind(b)`, `unbind(target)`, `set_bindings(bs, save)`, `load_mapping()`,
  `save_mapping()`; problems counted in `reporter.counts`.
- `reporting`: `RateLimitedReporter` (counted, rate-limited one-line messages).
- `osc`: the built-in address tables (`osc_address_rows()`, `osc_output_rows()`, `osc_markdown_table()`),
  `OscInput` (a UDP server on its own thread), `OscOutput` (a frame sink sending the analysis on its
  own thread).
- `config`: `ControlConfig`, the flags (--osc-port, --osc-host, --osc-out, --mapping, --midi-port,
  --midi-api) checked in one place; `LiveSession(control=...)` opens what it names in `start_control()`.
- `midi`: `MidiInput` (rtmidi on its own thread, ports by name, rescan).
"""
