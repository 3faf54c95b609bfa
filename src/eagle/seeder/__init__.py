"""The seeder: fetches each blob from its origin once, stores it, and seeds it first."""
