from qmr.cli import main

main()
