from castway.cli import main

raise SystemExit(main())
