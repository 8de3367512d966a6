from khaosync.cli.app import main

main()
