#include <cblas.h>
// Not declared by every cblas.h: the kernel OpenBLAS picked at run time.
char *openblas_get_corename(void);
