from firmgrant.cli import entry

entry()
