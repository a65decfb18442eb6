# DS-ViT Stage I on the graded digits with MvCo (DS-Net++'s multi-view
# consistency, dsnet_mm/models/mvco.py): configs/ds_vit_graded_digits.py
# with two augmented views of every image, the view-averaged EMA teacher
# (option A) for every sub-network but the largest. Same seed, schedule and
# iterations; each step runs every sandwich member on both views.
_base_ = ['./ds_vit_graded_digits.py']

model = dict(
    mvco=dict(mode='view_mean'),
    data_preprocessor=dict(
        type='MultiViewClsDataPreprocessor', num_classes=10,
        mean=[57.0] * 3, std=[82.0] * 3, to_rgb=False))
# each view its own random crop (the single-view config's augmentation)
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='MultiView', num_views=2,
         transforms=[[dict(type='RandomCrop', crop_size=32, padding=2)]]),
    dict(type='PackInputs'),
]))
