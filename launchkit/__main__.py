from launchkit.cli import main

raise SystemExit(main())
