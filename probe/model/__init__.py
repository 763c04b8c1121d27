"""Stage 2: Spec -> an initialized ``nn.Module`` and the rows to watch (spec architectures, user models, inputs, LSUV)."""
