"""The zero-setup demo: an embedded broker, simulated devices and the server, on one machine.

`mcpmqtt demo` needs nothing but this package: Mosquitto is used when it is installed, the pure-Python
amqtt broker otherwise. `mcpmqtt demo --tour` drives every tool against the devices and exits.
"""
