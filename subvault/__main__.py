from subvault.cli.main import main

main()
