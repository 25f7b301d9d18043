from __future__ import annotations

from medbench.cli import main

main()
