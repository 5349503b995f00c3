"""Django's command line for the django-eventstream application of the interop suite."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "esproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
