"""Command-line stages of the DomainBed study."""
