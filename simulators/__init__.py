"""The simulated pilot plant: the plant developers, CI and evaluators use instead of a real one.

Pure models (state, parameters, dt → state; no network, no clock, no randomness):
  fermenter.py   fed-batch fermenter: kinetics, elemental gas balances, DO cascade, heat, pH, steam, volume
  recovery.py    recovery units: centrifuge, UF/DF, capture and polishing chromatography
  lab.py         lab measurement error, lab CSV files
The plant and its data:
  scenario.py    scenarios (TOML): recipe, campaigns with variability and known true effects, lab, faults
  engine.py      all units on one simulated clock; run sequencing, harvest hand-over, lab sampling
  signals.py     every published signal: name, unit, noise, resolution, where it is published
  faults.py      fault injection by simulated time
  truth.py       each run's true KPIs as JSON (<dir>/truth/<batch_id>.json)
  historical.py  N complete runs as fast as possible, into the store or as historian CSV
  plant.py       live: the engine served over OPC UA (opcua_server.py) and MQTT (mqtt_publisher.py)
  wiring.py      from the site config: units, their chaining, and the tag that collects each signal
The simulator is the only code that writes OPC UA nodes or publishes MQTT messages.
"""
