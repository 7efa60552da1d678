"""One home's gateway, one concern per module.

=================  ==============================================================================
``node``           the composition root and scheduler: ``GatewayNode``, ``running``
``devices``        one record per configured device (driver from ``DRIVERS[kind]``, its poller)
``trader``         plans each interval and bids the residual; keeps the offer deliverable
``battery``        the battery's setpoint every control period, inside the envelope
``dc_link``        the DC-DC converter's command every control period (rules: ``dc_dispatch``)
``loads``          flexible loads planned into the surplus and limited
``ending``         an interval's closing reading, then its settlement once the outcome is final
``closing``        an ended interval's settlement and ledger block
``records``        the per-interval records and the state the tasks share
``status``         the owner's typed ``Status`` (status file, CLI, dashboard)
``faults``         unexpected errors: counted, logged once, answered with the safe state
``forecasts``      the learned profile on disk
``events``         what the node tells its observer
=================  ==============================================================================
"""

from gateway.home.events import BidMade, HomeEvent, IntervalClosed, IntervalEnded, SetpointWritten
from gateway.home.node import GatewayNode, running
from gateway.home.status import Status

__all__ = ["BidMade", "HomeEvent", "GatewayNode", "IntervalClosed", "IntervalEnded",
           "SetpointWritten", "Status", "running"]
