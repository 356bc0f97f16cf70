/*
 * LD_PRELOAD shim for running the real sanlock daemon in an unprivileged sandbox (tests only).
 *
 * sanlock raises RLIMIT_MEMLOCK and RLIMIT_RTPRIO at start and exits when that fails; a sandbox
 * without CAP_SYS_RESOURCE cannot raise them. This wrapper calls the real setrlimit and, only for
 * those two resources, reports success when the real call failed. Everything else is untouched.
 *
 * Build: cc -shared -fPIC -O2 -o libsetrlimit_shim.so setrlimit_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/resource.h>

typedef int (*setrlimit_fn)(__rlimit_resource_t, const struct rlimit *);

static int tolerated(__rlimit_resource_t resource)
{
	return resource == RLIMIT_MEMLOCK || resource == RLIMIT_RTPRIO;
}

int setrlimit(__rlimit_resource_t resource, const struct rlimit *rlim)
{
	static setrlimit_fn real;
	int rv;

	if (!real)
		real = (setrlimit_fn)dlsym(RTLD_NEXT, "setrlimit");
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	rv = real(resource, rlim);
	if (rv != 0 && tolerated(resource)) {
		errno = 0;
		return 0;
	}
	return rv;
}

int setrlimit64(__rlimit_resource_t resource, const struct rlimit64 *rlim)
{
	static int (*real64)(__rlimit_resource_t, const struct rlimit64 *);
	int rv;

	if (!real64)
		real64 = (int (*)(__rlimit_resource_t, const struct rlimit64 *))dlsym(RTLD_NEXT, "setrlimit64");
	if (!real64) {
		errno = ENOSYS;
		return -1;
	}
	rv = real64(resource, rlim);
	if (rv != 0 && tolerated(resource)) {
		errno = 0;
		return 0;
	}
	return rv;
}
