from subvault.cli.entry import main

main()
