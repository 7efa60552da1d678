"""Hardware abstraction: the only place role code meets the board.

Role code (``firmware/roles``) is written against these duck-typed interfaces, so the same role
code runs on an ESP32 (``firmware/hal/board.py``), under pytest and inside ``sim_devices``
(``firmware/hal/fake.py``, whose readings the simulator sets). MicroPython has no ``abc`` or
``typing``, so the contract is this docstring plus the fakes, which implement every method.

Units are integers with the scale the SunSpec registers use, so no float reaches a register:
W, V×10 (``v_x10``), A×100 (``a_x100``), Hz×100 (``hz_x100``), percent×100 (``pct_x100``), Wh.

Clock
    ``ticks_ms()`` monotonic milliseconds; ``ticks_diff(new, old)`` their difference (the board's
    ticks wrap, so never subtract ticks directly).
UART + direction pin (RS-485 half duplex)
    ``uart.write(buf)``, ``uart.read()`` -> bytes or None, ``uart.flush()`` (returns once the last
    stop bit left the shifter); ``pin.value(v)``. ``firmware/hal/rs485.py`` drives the pin around
    each frame.
Meter front end (metering IC over SPI, or ADC)
    ``sample()`` -> ``(w, v_x10, a_x100, hz_x100)`` with w + = import from the grid;
    ``energy_wh()`` -> ``(import_wh, export_wh)`` from the IC's own accumulators.
PV power stage
    ``sample()`` -> ``(w, v_x10, a_x100, hz_x100)`` with w >= 0 produced; ``energy_wh()`` ->
    ``(injected_wh, absorbed_wh)``; ``set_limit_w(w)`` caps the output, ``None`` lifts the cap.
Battery power stage + BMS
    ``sample()`` -> ``(w, v_x10, a_x100, soc_pct_x100)`` with w + = charge;
    ``set_power_w(w)`` commands the AC power (+ charge, − discharge, 0 idle).
DC-DC stage
    ``sample()`` -> ``(w, bus_v_x10, a_x100, tripped)`` with w and a + = from the DC bus into
    the port (charging), as in vendor model 64200;
    ``command(mode, a_x100, v_x10)`` with mode 0 wait, 1 CV, 2 CC charge (from bus), 3 CC discharge
    (into bus).
Controllable load stage (EV charger, deferrable appliance)
    ``sample()`` -> ``(w, connected, need_wh, deadline_min)``: power drawn (>= 0), whether it can
    run now, AC energy still needed, minute of the day it is needed by (-1: none);
    ``energy_wh()`` -> total drawn; ``set_limit_w(w)`` caps the power, ``None`` = its own default.
"""
