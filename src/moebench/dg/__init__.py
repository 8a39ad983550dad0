"""The DomainBed study: datasets, algorithms (ERM, GMoE, MASS, MoDE, Soft-MoE), ViT
backbones and MoE surgery, the training protocol, model selection, tables and figures.

Importing this package is torch-free; the modules below it import torch."""
