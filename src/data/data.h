// data — datasets (IDX: MNIST/Fashion-MNIST, gzip or raw; CIFAR-10/100 binary; NumPy .npz; image
// folders of PNG/JPEG in torchvision's ImageFolder layout), deterministic splits and batches.
// Depends on core.
#pragma once

#include "data/dataset.h"
#include "data/augment.h"
#include "data/cifar.h"
#include "data/disk_tensor.h"
#include "data/classes.h"
#include "data/idx.h"
#include "data/image_codec.h"
#include "data/image_folder.h"
#include "data/npz.h"
