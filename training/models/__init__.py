"""The networks only training uses: the CLIP adapter (`clip`), the stepper's image and video
discriminators (`discriminators`) and StyleGAN3's discriminator for `train generator`
(`stylegan_discriminator`). The networks a model file ships live in `core`."""
