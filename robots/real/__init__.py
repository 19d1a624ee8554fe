"""Real-arm adapters behind the driver contract: Sawyer through Intera, Panda through libfranka (`pac-driver`)."""
