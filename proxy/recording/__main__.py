"""``python -m proxy.recording <cmd> ...`` is ``h2proxy log <cmd> ...``."""
from .cli import main

main()
