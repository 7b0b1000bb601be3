"""Needs a package its requirements.txt forgot."""
import json
import requests


def handle(event, ctx):
    return requests.get(event["url"]).json()
