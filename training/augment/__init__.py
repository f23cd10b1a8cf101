"""Random augmentation while training: DiffAugment on images before a discriminator (`diff_augment`)
and SpecAugment, level shifts and same-class mixes on mel windows (`mel`). All of it draws from the
global RNG, which the training loop checkpoints, so a resumed run augments as the uninterrupted one."""
