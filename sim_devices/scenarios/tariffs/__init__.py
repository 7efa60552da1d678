"""Tariff files the shipped scenarios name (``[tariffs] schedule``)."""
