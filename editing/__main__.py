from editing.cli import main

raise SystemExit(main())
