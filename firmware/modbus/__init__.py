"""Sans-I/O Modbus server core (RTU and TCP framings over one register bank).

Bytes in, bytes out: the same code runs on MicroPython boards under asyncio, inside sim_devices
under CPython, and in tests, with no I/O of its own.
"""
