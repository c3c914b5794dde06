from chaosemergence.bench.cli import main

raise SystemExit(main())
