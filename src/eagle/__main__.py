from eagle.cli import main

main()
