from tuneforge.cli.main import main

raise SystemExit(main())
