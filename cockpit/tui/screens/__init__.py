"""Screens and modals of the cockpit app."""
