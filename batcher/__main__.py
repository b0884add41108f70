from batcher.cli.commands import main

main()
