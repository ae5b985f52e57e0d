from bivrec.cli import main

raise SystemExit(main())
