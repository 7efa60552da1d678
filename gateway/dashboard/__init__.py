"""The homeowner's local dashboard: web page, JSON API, Prometheus metrics, Home Assistant."""

from gateway.dashboard.app import DashboardApp, Request, Response
from gateway.dashboard.http import Dashboard, HttpLimits
from gateway.dashboard.preferences import OwnerPreferences, PreferencesStore

__all__ = [
    "Dashboard", "DashboardApp", "HttpLimits", "OwnerPreferences", "PreferencesStore", "Request",
    "Response",
]
