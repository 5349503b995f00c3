"""A Django project on django-eventstream and django-grip, as a user switching from Pushpin
brings one: the origin of tests/test_interop_eventstream.py."""
